"""What a failed command wrote to stderr, for tests that expect one line saying what to do."""


def one_line_error(capsys, err: str | None = None) -> str:
    """The one ``error:`` line of what the command wrote to stderr (``err``: already read); a
    progress bar's carriage returns before it split lines as a terminal shows them."""
    err = (capsys.readouterr().err if err is None else err).strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]
