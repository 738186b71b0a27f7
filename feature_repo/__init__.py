"""Feast feature repo (feature_store.yaml + feature_definitions.py), shipped as package data of smart_energy."""
