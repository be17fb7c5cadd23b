-- Stop: the operator removes compute and keeps storage.
obj.spec.desiredState = "Stopped"
return obj
