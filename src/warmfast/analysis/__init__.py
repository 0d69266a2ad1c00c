"""warmfast.analysis"""
