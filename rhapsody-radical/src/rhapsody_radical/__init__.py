"""RHAPSODY's 'radical_pilot' backend (on RADICAL-Pilot); see backend.py."""
