"""warmfast.model"""
