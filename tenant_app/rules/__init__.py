"""Domain rules as pure functions over plain data (beancount style).

Each invariant is one function returning a list of RuleError; an empty list means the input is
acceptable. Nothing here touches a database or a clock: the services gather the data and call them.
"""
