from slpt.main import main

main()
