"""Upload handlers that never let the client's file name reach the file system or a log.

Django names its temporary upload file after the client's extension
(`tmpXXXX.upload<ext>`): an extension of ~237+ characters makes that name longer than the
file system allows (OSError, HTTP 500), and the traceback then carries the file name, which
may hold a patient's name. Nothing in Dermatrack uses the client's name (stored images are
named by the storage), so both handlers replace it on arrival with a neutral one.
"""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.core.files.uploadedfile import TemporaryUploadedFile, UploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler, TemporaryFileUploadHandler

NEUTRAL_NAME = "upload"


class _NamelessTemporaryUploadedFile(TemporaryUploadedFile):
    def __init__(self, name, content_type, size, charset, content_type_extra=None):
        # The temporary file's name is ours alone: no part of the client's name in it.
        file = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the UploadedFile, as in Django
            prefix="dermatrack-", suffix=".upload", dir=settings.FILE_UPLOAD_TEMP_DIR
        )
        UploadedFile.__init__(self, file, name, content_type, size, charset, content_type_extra)


class NamelessMemoryFileUploadHandler(MemoryFileUploadHandler):
    def new_file(self, field_name, file_name, *args, **kwargs):
        super().new_file(field_name, NEUTRAL_NAME, *args, **kwargs)


class NamelessTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        # Not super().new_file: that would create Django's extension-named temporary file.
        self.field_name = field_name
        self.file_name = NEUTRAL_NAME
        self.content_type = content_type
        self.content_length = content_length
        self.charset = charset
        self.content_type_extra = content_type_extra
        self.file = _NamelessTemporaryUploadedFile(NEUTRAL_NAME, content_type, 0, charset, content_type_extra)
