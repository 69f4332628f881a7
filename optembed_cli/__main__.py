from optembed_cli.main import main

main()
