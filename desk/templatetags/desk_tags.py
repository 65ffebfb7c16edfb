"""Small template helpers of the desk's own pages."""

from django import template

register = template.Library()


@register.filter
def item_at(items, index: int):
    """Return items[index], or None past its end (a list beside the one a template loops over)."""
    try:
        return items[index]
    except (IndexError, TypeError, KeyError):
        return None
