"""Tokens kept in files, for the broker and the developer's commands alike."""


class TokenFileError(ValueError):
    """A token file that cannot serve; the message never holds its contents."""


def read_token_file(path: str, option: str) -> str:
    """The token stored in ``path`` (surrounding white space removed).

    Files keep tokens out of process listings and shell history; they suit
    Docker and Kubernetes secrets.

    Raises:
        TokenFileError: unreadable or empty file (the message never holds file contents).
    """
    try:
        with open(path, encoding="utf-8") as source:
            token = source.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise TokenFileError("%s %s: cannot read it (%s)" % (option, path, reason)) from None
    if not token:
        raise TokenFileError("%s %s: the file is empty" % (option, path))
    if any(c.isspace() for c in token):
        raise TokenFileError("%s %s: the token has white space inside; one token per file" % (option, path))
    return token
