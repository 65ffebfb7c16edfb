"""The admin's import and export: preview and confirm, large files through a worker, safe exports."""

from __future__ import annotations

import os
import shutil

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from import_export.admin import ExportMixin, ImportExportMixin
from import_export.forms import ConfirmImportForm, ExportForm
from import_export.results import RowResult

from licensing.formats import SafeCSV, SafeXLSX, SheetFormat, too_big_for_the_page
from licensing.services import import_job_create
from licensing.sheets import SheetError, check_size


class SafeExportMixin(ExportMixin):
    """Exports as CSV (UTF-8 with a BOM, so that Excel reads it right) or XLSX, formula cells neutralised."""

    export_formats = [SafeCSV, SafeXLSX]
    # Every column of the sheet, always: an export must import back as it is.
    export_form_class = ExportForm
    to_encoding = "utf-8-sig"
    export_resource_classes: list = []

    def get_export_resource_classes(self, request):
        return self.export_resource_classes


# The temporary files of the previews this session showed; a confirmation may only name one of them.
PREVIEWED_FILES_SESSION_KEY = "import_previewed_files"


class SheetConfirmImportForm(ConfirmImportForm):
    """The confirmation of a preview: only a file this session uploaded, in a format and sheet kind offered."""

    def __init__(self, *args, previewed: list[str], format_count: int, resource_count: int, file_exists, **kwargs):
        super().__init__(*args, **kwargs)
        self.previewed, self.format_count, self.resource_count = previewed, format_count, resource_count
        self.file_exists = file_exists

    def clean_import_file_name(self):
        name = os.path.basename(self.cleaned_data["import_file_name"])
        if name not in self.previewed or not self.file_exists(name):
            raise forms.ValidationError(
                "This sheet is not one you uploaded for a preview here, or it was imported already: upload it again.",
                code="unknown_file",
            )
        return name

    def _index(self, field: str, count: int, *, required: bool) -> str:
        value = (self.cleaned_data.get(field) or "").strip()
        if not value and not required:
            return value
        if not (value.isascii() and value.isdigit() and int(value) < count):
            raise forms.ValidationError(f"Unknown {field}: upload the sheet again.", code=f"unknown_{field}")
        return value

    def clean_format(self):
        return self._index("format", self.format_count, required=True)

    def clean_resource(self):
        return self._index("resource", self.resource_count, required=False)


class SheetImportExportMixin(SafeExportMixin, ImportExportMixin):
    """Import a sheet with a preview and one confirmation; a large sheet goes to a worker as an import job."""

    import_formats = [SheetFormat]
    import_template_name = "admin/licensing/import.html"
    import_export_change_list_template = "admin/import_export/change_list_import_export.html"
    skip_admin_log = True
    import_resource_classes: list = []
    # The list an import returns to, filtered (the work queue shows the lines still to bind).
    import_done_query = ""

    def get_import_resource_classes(self, request):
        return self.import_resource_classes

    def import_action(self, request: HttpRequest, **kwargs) -> HttpResponse:
        upload = request.FILES.get("import_file") if request.method == "POST" else None
        if upload is not None and self.has_import_permission(request):
            try:
                # The size is known before anything is read.
                check_size(upload.size)
                # The page holds the sheet whole while it checks it: many rows, or much text, go to a worker.
                too_big = too_big_for_the_page(upload)
            except SheetError as exc:
                return self._refuse(request, str(exc), **kwargs)
            upload.seek(0)
            if too_big:
                resource = self.import_resource_classes[0]
                job = import_job_create(
                    kind=resource.kind, upload=upload, file_name=upload.name, acting_user=request.user
                )
                messages.info(
                    request,
                    f"The sheet {upload.name} is being checked in the background: {too_big}. "
                    "You can leave this page and come back; nothing is written until you confirm.",
                )
                return HttpResponseRedirect(reverse("admin:licensing_importjob_change", args=[job.pk]))
        return super().import_action(request, **kwargs)

    def _refuse(self, request: HttpRequest, message: str, **kwargs) -> HttpResponse:
        # Re-render the form with the reason on the file field, reading nothing more.
        form = self.create_import_form(request)
        form.is_valid()
        # One reason for the file, ours ("The file is empty.", not Django's as well).
        form.errors.pop("import_file", None)
        form.add_error("import_file", message)
        context = {
            **self.admin_site.each_context(request),
            "title": "Import",
            "form": form,
            "opts": self.model._meta,
            "media": self.media + form.media,
            "fields_list": [
                (resource.get_display_name(), [f.column_name for f in resource().get_user_visible_fields()])
                for resource in self.get_import_resource_classes(request)
            ],
            "import_error_display": self.import_error_display,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, [self.import_template_name], context)

    confirm_form_class = SheetConfirmImportForm

    def get_confirm_form_initial(self, request, import_form):
        initial = super().get_confirm_form_initial(request, import_form)
        if initial.get("import_file_name"):
            # Remember the preview's file for this session: the confirmation names it in a hidden field.
            name = os.path.basename(initial["import_file_name"])
            previewed = request.session.get(PREVIEWED_FILES_SESSION_KEY, [])
            request.session[PREVIEWED_FILES_SESSION_KEY] = [*previewed[-19:], name]
        return initial

    def get_confirm_form_kwargs(self, request, import_form=None):
        storage_class = self.get_tmp_storage_class()

        def file_exists(name: str) -> bool:
            storage = storage_class(name=name, **self.get_tmp_storage_class_kwargs())
            # Only a folder storage can tell ahead of reading; the others answer when read.
            return not hasattr(storage, "get_full_path") or os.path.isfile(storage.get_full_path())

        return {
            **super().get_confirm_form_kwargs(request, import_form),
            "previewed": request.session.get(PREVIEWED_FILES_SESSION_KEY, []),
            "format_count": len(self.get_import_formats()),
            "resource_count": len(self.get_import_resource_classes(request)),
            "file_exists": file_exists,
        }

    def process_import(self, request: HttpRequest, **kwargs) -> HttpResponse:
        response = super().process_import(request, **kwargs)
        if response.status_code == 200:
            # The confirmation was refused: say so to whoever posted it (a form error, nothing read).
            response.status_code = 400
        else:
            name = os.path.basename(request.POST.get("import_file_name", ""))
            previewed = request.session.get(PREVIEWED_FILES_SESSION_KEY, [])
            request.session[PREVIEWED_FILES_SESSION_KEY] = [n for n in previewed if n != name]
        return response

    def write_to_tmp_storage(self, import_file, input_format):
        tmp_storage = self.get_tmp_storage_class()(
            encoding=None, read_mode=input_format.get_read_mode(), **self.get_tmp_storage_class_kwargs()
        )
        # Copy in chunks: the library's default joins the whole upload in memory.
        with tmp_storage._open(mode="wb") as target:
            import_file.seek(0)
            shutil.copyfileobj(import_file, target, 1 << 20)
        return tmp_storage

    def add_data_read_fail_error_to_form(self, form, e):
        if isinstance(e, SheetError):
            form.add_error("import_file", str(e))
        else:
            super().add_data_read_fail_error_to_form(form, e)

    def process_result(self, result, request):
        report = getattr(result, "report", None)
        if result.has_validation_errors() or result.has_errors():
            lines = [str(e) for e in report.errors[:20]] if report else []
            if report and report.error_count > len(lines):
                lines.append(f"and {report.error_count - len(lines)} more")
            messages.error(request, "Nothing was imported: " + "; ".join(lines))
        else:
            job = f" (import #{report.job_id})" if report and report.job_id else ""
            totals = result.totals
            new, updated = totals[RowResult.IMPORT_TYPE_NEW], totals[RowResult.IMPORT_TYPE_UPDATE]
            unchanged = totals[RowResult.IMPORT_TYPE_SKIP]
            messages.success(
                request, f"Import finished{job}: {new} new, {updated} updated, {unchanged} unchanged rows."
            )
        listing = reverse("admin:{}_{}_changelist".format(*self.get_model_info()), current_app=self.admin_site.name)
        return HttpResponseRedirect(f"{listing}?{self.import_done_query}" if self.import_done_query else listing)
