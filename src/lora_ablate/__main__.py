from lora_ablate.cli import main

main()
