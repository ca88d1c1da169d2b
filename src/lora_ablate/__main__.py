from lora_ablate.app.cli import main

main()
