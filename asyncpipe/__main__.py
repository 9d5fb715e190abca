from asyncpipe.cli import main

raise SystemExit(main())
