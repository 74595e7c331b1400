from soundsight.cli import main

main()
