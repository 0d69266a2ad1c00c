"""warmfast.train"""
