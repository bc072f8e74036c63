"""The county budget-accounting application that runs inside each county VM. Imports no platform package."""
