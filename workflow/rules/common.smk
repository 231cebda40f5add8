import re

ATLAS_H5 = "results/preprocess/atlas.h5"
REJECTS_CSV = "results/preprocess/rejects.csv"
QC_FIGURE = "results/preprocess/qc.png"
SPLIT_MANIFEST = "results/split/manifest.csv"
ARCHIVE_DIR = "resources/csxa/archives"


def csxa_archives():
    """Archive key (png, json) -> its config entry; empty in demo mode."""
    return config["data"].get("csxa", {}).get("archives", {})


wildcard_constraints:
    archive="png|json",
    filename="|".join(re.escape(spec["filename"]) for spec in csxa_archives().values())
    or "no-archive-configured",


def raw_atlas_dirs(wildcards):
    """The raw atlas as image and annotation folders, from the configured source."""
    if config["data"]["source"] == "demo":
        return {
            "images": "resources/demo_atlas/images",
            "annotations": "resources/demo_atlas/annotations",
        }
    return {
        "images": "resources/csxa/unpacked/png",
        "annotations": "resources/csxa/unpacked/json",
    }


def archive_spec_by_filename(wildcards):
    for spec in csxa_archives().values():
        if spec["filename"] == wildcards.filename:
            return spec
    raise ValueError(f"no data.csxa.archives entry has filename {wildcards.filename!r}")


def csxa_setting(key):
    """A data.csxa setting, looked up when a CSXA job runs (the section is absent in demo mode)."""
    return lambda wildcards: config["data"]["csxa"][key]


def archive_spec(wildcards):
    return csxa_archives()[wildcards.archive]


def archive_path(wildcards):
    return f"{ARCHIVE_DIR}/{archive_spec(wildcards)['filename']}"


def final_outputs():
    return [ATLAS_H5, REJECTS_CSV, QC_FIGURE, SPLIT_MANIFEST]
