from lambda_debugger.cli import main

raise SystemExit(main())
