"""The model's diagnostic classes in words, for pages: "Melanocytic nevus (nv)" where a code
alone (`nv`) said nothing to a clinician (issue 12, item 8). Names come from the configured
model's metadata (`class_names`), else from the HAM10000 names every version so far was
trained on; an unknown code is shown as it is."""

from __future__ import annotations

from lesions import risk

# The HAM10000 diagnostic categories (Tschandl et al., 2018), as in inference/models/lesion_classifier.json.
HAM10000_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}


def class_name(code: str) -> str:
    """The class in words, capitalised ("Melanocytic nevus"); the code itself when unknown."""
    names = {**HAM10000_NAMES, **((risk.model_info() or {}).get("class_names") or {})}
    name = names.get(code, "")
    return name[:1].upper() + name[1:] if name else code


def class_label(code: str) -> str:
    """The class in words with its code beside it: "Melanocytic nevus (nv)"."""
    name = class_name(code)
    return code if name == code else f"{name} ({code})"
