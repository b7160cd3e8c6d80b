#include "experiments/cli/cli.h"

int main(int argc, char** argv) { return tg::run_cli(argc, argv); }
