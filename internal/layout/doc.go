// Package layout holds no code, only the test that keeps the module's structure as
// designed: which package may depend on which, and who reads flags and the environment.
// Breaking a rule fails the build's tests, so the picture in the README stays true.
package layout
