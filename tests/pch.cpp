// levee's tests: the translation unit that builds their precompiled header
// (tests/CMakeLists.txt, levee_test_pch). It holds nothing else.
