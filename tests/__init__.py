"""Tests for the PPO trainer; a package so `tests.envs_for_tests:Class` works as an env entry point."""
