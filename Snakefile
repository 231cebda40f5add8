from snakemake.utils import min_version

from radsynth.core.settings import validate_config

min_version("9.0")


# The demo config is the default only: a --configfile (the paper preset) replaces it instead of
# being merged into it, so no demo-only key (say the diffusers network's) leaks into another preset.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# The config through the settings models (every bad key named by its dotted path), then the
# checks across keys; `config` itself stays as written (rule params and provenance read it).
validate_config(config)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/anatomy.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/turing.smk"
include: "workflow/rules/release.smk"


rule all:
    input:
        final_outputs,
