"""Domain errors for client-supplied audio and URLs, raised below the routes.

Decoding and fetching do not know which request field the audio came from (`file`, `url`, a chat
`input_audio` part, a RunPod `audio`), so they raise `InputError` without a parameter; the boundary
that does know turns it into an `APIError` naming the field (`exc.api_error("url")`). One that is
not caught is still answered in OpenAI's shape by the app's error handlers, with no parameter.
"""

from server.errors import APIError


class InputError(Exception):
    """Audio or a URL that cannot be used: 400 (or 413 when too large), with a machine-readable code."""

    def __init__(self, message: str, *, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def api_error(self, param: str | None) -> APIError:
        return APIError(self.status, self.message, param=param, code=self.code)
