from lambda_debugger.developer.cli import main

raise SystemExit(main())
