"""warmfast.run"""
