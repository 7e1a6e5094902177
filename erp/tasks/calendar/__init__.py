"""The calendar: when a schedule fires. Pure arithmetic shared by beat, the worker and the web;
it imports no other erp module."""
