"""Post admin forms as a browser would: every field of the page as rendered, then the changes to try."""

from datetime import date, datetime

from django.forms import CheckboxInput, MultiWidget


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _form_data(form) -> dict:
    data = {}
    for bound in form:
        widget = bound.field.widget
        value = bound.value()
        if isinstance(widget, MultiWidget):
            parts = value if isinstance(value, list | tuple) else widget.decompress(value)
            for index, part in enumerate(parts):
                data[f"{bound.html_name}_{index}"] = _text(part)
        elif isinstance(widget, CheckboxInput):
            if value:
                data[bound.html_name] = "on"
        elif isinstance(value, list | tuple):
            data[bound.html_name] = [_text(v) for v in value]
        else:
            data[bound.html_name] = _text(value)
    return data


def change_form_data(response) -> dict:
    """Return the POST data of an admin change page as rendered: the object's form and its inlines."""
    data = {}
    adminform = response.context.get("adminform")
    if adminform is not None:
        data.update(_form_data(adminform.form))
    for inline in response.context.get("inline_admin_formsets") or []:
        formset = inline.formset
        data.update(_form_data(formset.management_form))
        for form in formset.forms:
            data.update(_form_data(form))
    if "change_reason" in data and not data["change_reason"]:
        # A person says why (rule 12); the tests that check the reason itself send their own.
        data["change_reason"] = "Corrected at the customer's request"
    return data


def inline_prefix(response, model) -> str:
    """Return the form prefix of the inline of `model` on a change page."""
    for inline in response.context.get("inline_admin_formsets") or []:
        if inline.formset.model is model:
            return inline.formset.prefix
    raise LookupError(f"no inline of {model.__name__}")


def confirmation(response) -> dict:
    """Return what a binding page's form sends back besides its fields: the form's key and what it showed."""
    return {"request_key": str(response.context["request_key"]), "shown": response.context["shown"]}
