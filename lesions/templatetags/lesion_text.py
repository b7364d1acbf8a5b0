"""Template filters for the lesion pages: `{{ code|class_label }}` -> "Melanocytic nevus (nv)"."""

from django import template

from lesions import classes

register = template.Library()


@register.filter
def class_label(code: object) -> str:
    return classes.class_label(str(code)) if code else ""
