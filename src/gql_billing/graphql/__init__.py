"""The GraphQL surface: the only package that imports strawberry."""
