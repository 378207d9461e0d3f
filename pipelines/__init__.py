"""Entry points: ``build_corpus``, ``compact`` and the trainers."""
import logging

from run.console import DropKnownNoise

# Beam logs these on every import on machines without GCP clients; they mean nothing here
logging.getLogger().addFilter(DropKnownNoise())
