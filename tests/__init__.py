"""Tests for the PPO trainer; a package so `tests.envs.toy:Class` works as an env entry point."""
