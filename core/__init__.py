"""CoreMachine: the job → stage → task engine, free of any I/O (it talks to ports)."""
