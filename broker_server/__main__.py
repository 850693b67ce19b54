from broker_server.app import main

raise SystemExit(main())
