"""The one error type users see: bad config, unknown env, bad checkpoint, failed worker."""


class UserError(Exception):
    """A problem the user can fix. The CLI prints its message alone and exits with `exit_code`."""

    exit_code = 2


class ConfigError(UserError):
    """The config file or an override is invalid; the message lists every problem found."""
