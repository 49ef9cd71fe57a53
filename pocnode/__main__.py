from pocnode.cli import main

main()
