"""Domain errors that services raise; the API turns each kind into one status code."""


class NotFoundError(LookupError):
    """The thing asked for does not exist (404)."""


class ConflictError(Exception):
    """A clash with the current state: a name taken, a stale version (409)."""


class InvalidInputError(ValueError):
    """Input that passed the schema but breaks a rule, e.g. an unregistered task name (422)."""
