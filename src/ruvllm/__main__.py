from ruvllm.cli import main

main()
