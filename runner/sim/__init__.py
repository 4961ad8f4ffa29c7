"""The provider simulator: Runway and fal.ai protocols over real HTTP on loopback."""
