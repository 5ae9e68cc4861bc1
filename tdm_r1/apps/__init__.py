"""Layer 6, applications: what the commands run (the demo, listings, generation jobs, the RL method
arena, the toy-world build)."""
