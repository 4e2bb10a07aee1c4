"""AWS access: the only package that imports boto3.

Every client honours the standard AWS_ENDPOINT_URL variable, which is how the local system and
the tests point the same code at moto.
"""
