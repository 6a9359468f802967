"""Exit statuses every command shares."""

EXIT_OK, EXIT_INTERNAL, EXIT_ERRORS = 0, 1, 2
