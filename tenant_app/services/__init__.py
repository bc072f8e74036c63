"""Database operations of the county application. Each service gathers plain data, asks the pure
rules in tenant_app.rules, and writes in one transaction; a refusal raises RuleViolationError before
anything is written."""
