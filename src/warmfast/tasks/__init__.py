"""warmfast.tasks"""
