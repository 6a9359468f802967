"""`python -m defectflow.cli`."""

import sys

from defectflow.cli import main

sys.exit(main())
