"""The model manager: a catalogue of recommended models, their download and checks."""
