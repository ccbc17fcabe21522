"""The Docker-free local run: the HealthImaging emulator on loopback, driven by the real entry points."""
