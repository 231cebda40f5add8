rule build_quartets:
    input:
        atlas=ATLAS_H5,
        classifier=FACING_CLASSIFIER,
        manifests=turing_sample_manifests,
    output:
        directory(TURING_STUDY),
    log:
        "logs/build_quartets/build_quartets.log",
    conda:
        "../../envs/torch.yaml"
    params:
        turing=config["turing"],
        batch_size=config["sampling"]["gather"]["batch_size"],
    script:
        "../scripts/build_quartets.py"


rule rating_form:
    input:
        TURING_STUDY,
    output:
        TURING_FORM,
    log:
        "logs/rating_form/rating_form.log",
    conda:
        "../../envs/data.yaml"
    params:
        form=config["turing"]["form"],
    script:
        "../scripts/rating_form.py"


rule simulate_ratings:
    input:
        TURING_STUDY,
    output:
        directory(SIMULATED_RATINGS),
    log:
        "logs/simulate_ratings/simulate_ratings.log",
    conda:
        "../../envs/stats.yaml"
    params:
        simulation=config["turing"]["simulation"],
        labels=SELECTED_LABELS,
    script:
        "../scripts/simulate_ratings.py"


rule turing_stats:
    input:
        study=TURING_STUDY,
        ratings=rating_files,
    output:
        **TURING_STATS,
    log:
        "logs/turing_stats/turing_stats.log",
    conda:
        "../../envs/stats.yaml"
    params:
        statistics=config["turing"]["statistics"],
        simulated=config["turing"]["ratings"] == "simulated",
    script:
        "../scripts/turing_stats.py"


rule turing_figures:
    input:
        study=TURING_STUDY,
        ratings=rating_files,
    output:
        violins=report(
            TURING_VIOLINS,
            caption="../report/turing_violins.rst",
            category="Turing test",
        ),
        quartet=report(
            TURING_EXAMPLE,
            caption="../report/turing_example.rst",
            category="Turing test",
        ),
    log:
        "logs/turing_figures/turing_figures.log",
    conda:
        "../../envs/stats.yaml"
    params:
        simulated=config["turing"]["ratings"] == "simulated",
        example_quartet=config["turing"]["example_quartet"],
    script:
        "../scripts/turing_figures.py"
