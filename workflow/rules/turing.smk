rule build_quartets:
    input:
        atlas=ATLAS_H5,
        classifier=FACING_CLASSIFIER,
        manifests=turing_sample_manifests,
    output:
        TURING_STUDY_RECORD,
    log:
        "logs/build_quartets/build_quartets.log",
    benchmark:
        "benchmarks/build_quartets/build_quartets.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        design=pick(config["turing"], "n_quartets", "seed", "sample_set"),
        study_dir=TURING_STUDY,
    script:
        "../scripts/build_quartets.py"


rule rating_form:
    input:
        TURING_STUDY_RECORD,
    output:
        TURING_FORM,
    log:
        "logs/rating_form/rating_form.log",
    benchmark:
        "benchmarks/rating_form/rating_form.tsv"
    conda:
        "../../envs/data.yaml"
    params:
        form=canonical(config["turing"]["form"]),
        study_dir=TURING_STUDY,
    script:
        "../scripts/rating_form.py"


rule simulate_ratings:
    input:
        TURING_STUDY_RECORD,
    output:
        directory(SIMULATED_RATINGS),
    log:
        "logs/simulate_ratings/simulate_ratings.log",
    benchmark:
        "benchmarks/simulate_ratings/simulate_ratings.tsv"
    conda:
        "../../envs/stats.yaml"
    params:
        simulation=canonical(config["turing"]["simulation"]),
        labels=selected_labels,
        study_dir=TURING_STUDY,
    script:
        "../scripts/simulate_ratings.py"


rule turing_stats:
    input:
        study=TURING_STUDY_RECORD,
        ratings=rating_files,
    output:
        **turing_stats_outputs(),
    log:
        "logs/turing_stats/turing_stats.log",
    benchmark:
        "benchmarks/turing_stats/turing_stats.tsv"
    conda:
        "../../envs/stats.yaml"
    params:
        statistics=canonical(config["turing"]["statistics"]),
        simulated=config["turing"]["ratings"] == "simulated",
        study_dir=TURING_STUDY,
    script:
        "../scripts/turing_stats.py"


rule turing_figures:
    input:
        study=TURING_STUDY_RECORD,
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
    benchmark:
        "benchmarks/turing_figures/turing_figures.tsv"
    conda:
        "../../envs/stats.yaml"
    params:
        simulated=config["turing"]["ratings"] == "simulated",
        example_quartet=config["turing"]["example_quartet"],
        study_dir=TURING_STUDY,
    script:
        "../scripts/turing_figures.py"
