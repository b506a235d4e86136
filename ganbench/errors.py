"""The exceptions plugins and ganbench share: errors a user can fix, and a run asked to stop."""


class UserError(Exception):
    """Bad input: the message is one sentence that names the problem and the fix."""


class Interrupted(Exception):
    """The launcher asked the run to stop (Ctrl-C, SIGTERM); the loop checkpointed it.

    Raised by the training loop, and by a long metric that sees ``context.should_stop()``.
    """
