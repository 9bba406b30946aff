import sys

from reprobuild.cli.main import main

sys.exit(main())
