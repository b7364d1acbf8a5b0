"""The model's diagnostic classes in words, for pages: "Melanocytic nevus (nv)" where a code
alone (`nv`) said nothing to a clinician (issue 12, item 8). Names come from the configured
model's metadata (`class_names`), else from the HAM10000 names every version so far was
trained on; an unknown code is shown as it is."""

from __future__ import annotations

from inference.metrics import CLASS_NAMES
from lesions import risk


def class_name(code: str) -> str:
    """The class in words, capitalised ("Melanocytic nevus"); the code itself when unknown."""
    names = {**CLASS_NAMES, **((risk.model_info() or {}).get("class_names") or {})}
    name = names.get(code, "")
    return name[:1].upper() + name[1:] if name else code


def class_label(code: str) -> str:
    """The class in words with its code beside it: "Melanocytic nevus (nv)"."""
    name = class_name(code)
    return code if name == code else f"{name} ({code})"
