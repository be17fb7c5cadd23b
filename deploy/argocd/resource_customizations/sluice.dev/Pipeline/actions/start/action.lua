-- Start: the operator provisions compute (after any clear in progress has finished).
obj.spec.desiredState = "Running"
return obj
