import os
import sys

# Scene helpers live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
